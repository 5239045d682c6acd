from diffusion_oracle.cli import main

raise SystemExit(main())
