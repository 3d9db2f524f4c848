"""Side-by-side comparisons with other exporters and runtimes (`make bench-peers`), each with its
probe that runs in a child process so memory figures never mix."""
