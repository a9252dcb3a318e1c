"""Single sign-on tests against a real OpenID provider."""
