"""``--config-dir``: Consul-style service definitions, loaded at start and on SIGHUP."""

from __future__ import annotations

from pathlib import Path

from twisted.application import service
from twisted.logger import Logger

from . import definitions
from .checks import ScriptPolicy
from .errors import CatalogError
from .model import Catalog, Check, Service

log = Logger(namespace="homeport")


class ConfigService(service.Service):
    """Loads the definition files at start; :meth:`reload` reads them again.

    A file that fails to parse keeps what it defined last time (``_good``), so a typo
    saved in one file does not deregister its services.
    """

    def __init__(
        self,
        catalog: Catalog,
        node: str,
        directories: tuple[Path, ...],
        scripts: ScriptPolicy | None = None,
    ) -> None:
        self.catalog = catalog
        self.node = node
        self.directories = list(directories)
        self.scripts = scripts
        self._good: dict[Path, tuple[list[Service], list[Check]]] = {}

    def startService(self) -> None:
        service.Service.startService(self)
        self.reload()

    def reload(self) -> None:
        loaded = definitions.load(self.directories, self.node, self._good, self.scripts)
        for error in loaded.errors:
            log.error("Bad service definition {error}", error=str(error))
        try:
            self.catalog.replace_source(self.node, "config", loaded.services, loaded.checks)
        except CatalogError as e:
            log.error("Loading service definitions failed: {reason}", reason=str(e))
            return
        self._good = loaded.by_file
        log.info(
            "Loaded {services} service(s) and {checks} check(s) from {files} definition file(s)",
            services=len(loaded.services),
            checks=len(loaded.checks),
            files=len(loaded.by_file),
        )
