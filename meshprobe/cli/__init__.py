"""The command line: `meshprobe run|check|probe|demo`."""
