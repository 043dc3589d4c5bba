from rft_cli.cli import main

main()
