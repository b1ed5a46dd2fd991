from kd_edge.cli import main

main()
