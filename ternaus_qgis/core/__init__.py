"""What the plugin does, apart from how it is shown: inputs, the extraction run, result layers.

Used alike by the dock's tasks and the Processing algorithms (one implementation).
"""
