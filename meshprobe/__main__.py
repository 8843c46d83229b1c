from meshprobe.cli.main import main

raise SystemExit(main())
