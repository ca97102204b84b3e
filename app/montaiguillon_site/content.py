"""Texts shown on the page. Change HEADLINE to see a release reach the site."""

TITLE = "Montaiguillon"
HEADLINE = "Welcome to Montaiguillon"
INTRO = "News from the village at the foot of the castle ruins."
NEWS_UNAVAILABLE = "The news are temporarily unavailable. Please try again in a moment."
NO_NEWS = "No news yet."
