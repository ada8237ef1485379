"""What runs inside an allocation. Imports nothing from the login-node side of jobqueue."""
