"""The API's routes, one router per concern; each is parse, authorise, call, shape."""
