"""web/frontdoors/: Front doors other platforms speak (Rasa, Botpress): thin translators over
the run service."""
