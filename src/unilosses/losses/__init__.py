"""The loss catalogue, each loss written once over the array API namespace ``xp``."""
