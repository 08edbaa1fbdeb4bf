from transferability.cli import main

main()
