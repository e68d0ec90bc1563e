from flexmarket.cli import main

main()
