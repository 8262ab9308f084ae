"""Automatic TLS: ACME v2 issuing, the certificate directory, challenges, the le:/lets: endpoint.

``store`` reads and writes the directory of ``<hostname>.pem`` files; ``challenges`` answers
http-01 and tls-alpn-01; ``issuer`` is the Service that gets and renews certificates with
certbot's ``acme`` library in a thread; ``endpoint`` serves TLS with SNI from the directory;
``wiring`` is what ``homeport.tap.makeService`` calls to connect them.
"""
