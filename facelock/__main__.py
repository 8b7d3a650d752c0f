from facelock.cli import main

raise SystemExit(main())
