"""The bottom layer: the records on the topics, the delivery plan and the platform's vocabulary.

Every other layer imports these; they import nothing of Switchboard's."""
