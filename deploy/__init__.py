"""facelock.deploy: put facelock on boards (artifact, SSH push, SD-card first boot).

Runs on the workstation. Standard library only, plus the system tools it drives (ssh, mtools)."""
