"""edge: the on-device runtime (no TensorFlow, ever). Rooms: models, vision, identity, device, mqtt,
service; the core modules here (errors, types, options, images, names, files) are shared by all of them.
See docs/architecture.md."""

__version__ = "0.1.0"
