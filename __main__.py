from qcompile.cli.main import main

main()
