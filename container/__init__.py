"""The UAT container image: Dockerfile, entrypoint.sh and the prompt server (no code from bot/)."""
