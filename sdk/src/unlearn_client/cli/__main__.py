from unlearn_client.cli import main

main()
