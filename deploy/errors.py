"""Deployment errors: each names the host, file or image at fault and what was expected."""

from edge.errors import FacelockError


class DeployError(FacelockError):
    """Building, pushing or provisioning a deployment failed."""
