from distrec.cli import main

main()
