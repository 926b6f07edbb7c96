"""Connected mailbox accounts and calendar connections (ACC-1 … ACC-10)."""
