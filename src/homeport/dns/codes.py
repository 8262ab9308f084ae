"""The numbers of the DNS wire format that every DNS module speaks (RFC 1035, 2782,
3596, 5936, 6891): record types and classes, response codes, header flag bits, sizes.
"""

# Record types and classes (RFC 1035, 2782, 3596, 5936, 6891).
TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_PTR = 12
TYPE_TXT = 16
TYPE_AAAA = 28
TYPE_SRV = 33
TYPE_OPT = 41
TYPE_IXFR = 251
TYPE_AXFR = 252
TYPE_ANY = 255
CLASS_IN = 1
CLASS_ANY = 255

# Response codes.
NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5
BADVERS = 16  # extended: 1 in the OPT record, 0 in the header

# Header flag bits.
QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
CD = 0x0010

CLASSIC_UDP_SIZE = 512
TCP_SIZE = 65535
OPT_SIZE = 11  # root name, type, class, ttl, rdlength: our OPT carries no options
