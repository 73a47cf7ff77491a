#!/bin/sh
# Build-stage only: run a command trusting the system CAs plus the PEM bundle given as the
# `extra-ca` build secret (a TLS-intercepting or corporate proxy), e.g.
#   docker build --secret id=extra-ca,src=/usr/local/share/ca-certificates/proxy.crt .
# Without the secret it runs the command unchanged. The combined bundle lives in /tmp for the
# duration of this one RUN and is removed before the layer is committed, so it reaches no image.
set -eu
secret=/run/secrets/extra-ca
if [ ! -s "$secret" ]; then
    exec "$@"
fi
bundle=$(mktemp /tmp/ca-bundle.XXXXXX)
trap 'rm -f "$bundle"' EXIT
for system in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    if [ -s "$system" ]; then
        cat "$system" >>"$bundle"
        break
    fi
done
cat "$secret" >>"$bundle"
# uv (rustls) and pip read SSL_CERT_FILE / PIP_CERT; requests-based tools REQUESTS_CA_BUNDLE.
SSL_CERT_FILE=$bundle PIP_CERT=$bundle REQUESTS_CA_BUNDLE=$bundle "$@"
