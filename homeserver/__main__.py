from homeserver.cli import main

main()
