"""Where the deployment files live in the source checkout."""

from pathlib import Path

DEPLOY_DIR = Path(__file__).resolve().parent
REPO_DIR = DEPLOY_DIR.parent
INSTALLER = DEPLOY_DIR / "install.sh"
FIRSTBOOT_DIR = DEPLOY_DIR / "firstboot"
ANSIBLE_DIR = DEPLOY_DIR / "ansible"
UNIT_FILE = REPO_DIR / "systemd" / "facelock.service"
CORAL_USB_DROPIN = REPO_DIR / "systemd" / "facelock.service.d" / "coral-usb.conf"
