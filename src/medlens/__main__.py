from medlens.cli.main import main

main()
