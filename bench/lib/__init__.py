"""Helpers the benchmark parts share, each written once: wrk (`wrk`), request bodies (`bodies`),
ports and server processes (`processes`), our own server's launch settings (`ours`)."""
