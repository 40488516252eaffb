"""The playground: a person tries the models their grants name, through the gateway itself."""
