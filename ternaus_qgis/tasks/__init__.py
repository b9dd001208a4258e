"""QgsTask subclasses: the work behind the dock's buttons, off the GUI thread."""
