# Lazy: importing this file must not import homeport itself or install a reactor.
from twisted.application.service import ServiceMaker

homeport = ServiceMaker(
    "homeport",
    "homeport.tap",
    "Service catalog (HTTP + DNS), log sink, event push and dashboard",
    "homeport",
)
