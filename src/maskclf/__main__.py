from maskclf.cli import main

main()
