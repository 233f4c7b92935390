"""`mpidock containerize`: an image for a binary built on the submit host (seed 003).

plan.py reads ldd's and dpkg's answers and writes the Dockerfile (pure); build.py asks the
host and builds with the host's engine; command.py is the command line.
"""
