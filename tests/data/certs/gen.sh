#!/usr/bin/env bash
# Regenerates the TLS test fixtures in this folder with the openssl CLI (3.x).
# The tests in src/tls/cert.rs read the *.sha1 files written here, so a
# regeneration keeps them consistent; the serial numbers are fixed below.
#
#   ca.crt / ca.key                  EC P-256 CA, "Corral Test CA"
#   rsa.crt                          self-signed, RSA 2048, serial > u128, SANs DNS/IP/email
#   rsa2048-pkcs1.key                its key, PKCS#1 ("RSA PRIVATE KEY")
#   rsa2048-pkcs8.key                the same key, PKCS#8 ("PRIVATE KEY")
#   ec.crt / ec-sec1.key             self-signed, P-256, SEC1 key with an EC PARAMETERS block
#   chain-leaf.crt / chain-leaf.key  P-384 leaf signed by ca.crt (PKCS#8 key)
#   expired.crt / expired.key        signed by ca.crt, valid 2020-01-01 .. 2021-01-01
#   v1.crt / v1.key                  X.509 v1 (no extensions) signed by ca.crt
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# CA
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout ca.key -out ca.crt -days 36500 -set_serial 1 \
  -subj "/C=US/O=Corral Test/CN=Corral Test CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign"

# RSA 2048, PKCS#1 and PKCS#8
openssl genrsa -traditional -out rsa2048-pkcs1.key 2048
openssl pkcs8 -topk8 -nocrypt -in rsa2048-pkcs1.key -out rsa2048-pkcs8.key
openssl req -x509 -key rsa2048-pkcs8.key -out rsa.crt -days 36500 \
  -set_serial 0x7fe1d2c3b4a5968778695a4b3c2d1e0f10213243 \
  -subj "/C=US/ST=California/O=Corral Test/CN=rsa.example.com" \
  -addext "subjectAltName=DNS:rsa.example.com,DNS:*.rsa.example.com,IP:10.0.0.1,email:admin@example.com" \
  -addext "basicConstraints=critical,CA:FALSE"

# EC P-256, SEC1 key (ecparam writes an "EC PARAMETERS" block before the key)
openssl ecparam -name prime256v1 -genkey -out ec-sec1.key
openssl req -x509 -key ec-sec1.key -out ec.crt -days 36500 -set_serial 2 \
  -subj "/CN=ec.example.com" -addext "subjectAltName=DNS:ec.example.com"

# P-384 leaf signed by the CA
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out chain-leaf.key
openssl req -new -key chain-leaf.key -subj "/O=Corral Test/CN=chain.example.com" -out "$tmp/leaf.csr"
printf 'subjectAltName=DNS:chain.example.com\nbasicConstraints=CA:FALSE\n' >"$tmp/leaf.ext"
openssl x509 -req -in "$tmp/leaf.csr" -CA ca.crt -CAkey ca.key -set_serial 4096 \
  -days 36500 -extfile "$tmp/leaf.ext" -out chain-leaf.crt

# Expired (backdated with `openssl ca`) and v1 certificates, signed by the CA
mkdir -p "$tmp/db"
: >"$tmp/db/index.txt"
echo 2000 >"$tmp/db/serial"
cat >"$tmp/ca.cnf" <<EOF
[ ca ]
default_ca = test
[ test ]
database = $tmp/db/index.txt
serial = $tmp/db/serial
new_certs_dir = $tmp/db
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[ anything ]
commonName = supplied
[ leaf ]
subjectAltName = DNS:expired.example.com
EOF
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out expired.key
openssl req -new -key expired.key -subj "/CN=expired.example.com" -out "$tmp/expired.csr"
openssl ca -batch -config "$tmp/ca.cnf" -cert ca.crt -keyfile ca.key -in "$tmp/expired.csr" \
  -startdate 20200101000000Z -enddate 20210101000000Z -extensions leaf -notext -out expired.crt
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out v1.key
openssl req -new -key v1.key -subj "/CN=v1.example.com" -out "$tmp/v1.csr"
openssl ca -batch -config "$tmp/ca.cnf" -cert ca.crt -keyfile ca.key -in "$tmp/v1.csr" \
  -days 36500 -notext -out v1.crt

for c in ca rsa ec chain-leaf expired v1; do
  openssl x509 -in "$c.crt" -noout -fingerprint -sha1 >"$c.crt.sha1"
done
