# Install rules (cmake --install) and the Debian package (cpack -G DEB, CPackConfig.cmake).
# Paths under the prefix follow GNUInstallDirs; /etc and /var are chosen when installing, by
# GNUInstallDirs' own rule (prefix /usr -> /etc and /var, any other prefix -> PREFIX/etc,
# PREFIX/var), so `cmake --install build --prefix /usr` and the package agree with a
# configure-time prefix of /usr/local.
include(GNUInstallDirs)

set(sprayer_deploy ${PROJECT_SOURCE_DIR}/conf/deploy)
set(sprayer_docdir ${CMAKE_INSTALL_DATADIR}/doc/sprayer)

install(TARGETS sprayer RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})
install(FILES ${PROJECT_SOURCE_DIR}/conf/sql/schema-sqlite.sql ${PROJECT_SOURCE_DIR}/conf/sql/schema-postgresql.sql
              ${PROJECT_SOURCE_DIR}/conf/sql/notify-postgresql.sql
        DESTINATION ${CMAKE_INSTALL_DATADIR}/sprayer/sql)
install(FILES ${sprayer_deploy}/keepalived/keepalived.conf DESTINATION ${CMAKE_INSTALL_DATADIR}/sprayer/keepalived)
install(PROGRAMS ${sprayer_deploy}/keepalived/sprayer-healthz.sh ${sprayer_deploy}/keepalived/check-config.sh
        DESTINATION ${CMAKE_INSTALL_DATADIR}/sprayer/keepalived)
install(FILES ${sprayer_deploy}/prometheus/prometheus.yml ${sprayer_deploy}/prometheus/sprayer-rules.yml
        DESTINATION ${CMAKE_INSTALL_DATADIR}/sprayer/prometheus)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/docs/configuration.md ${PROJECT_SOURCE_DIR}/docs/tls.md
              ${PROJECT_SOURCE_DIR}/docs/packaging.md
        DESTINATION ${sprayer_docdir})
install(FILES ${PROJECT_SOURCE_DIR}/conf/examples/sprayer.yaml DESTINATION ${sprayer_docdir}/examples)
install(FILES ${PROJECT_SOURCE_DIR}/cmake/deb/copyright DESTINATION ${sprayer_docdir})

# The unit in the source tree names /usr/local/bin/sprayer (a hand install); the installed
# one names the installed binary.
file(READ ${sprayer_deploy}/systemd/sprayer.service sprayer_unit)
string(REPLACE "/usr/local/bin/sprayer" "${CMAKE_INSTALL_FULL_SBINDIR}/sprayer" sprayer_unit "${sprayer_unit}")
file(WRITE ${PROJECT_BINARY_DIR}/install/sprayer.service.in "${sprayer_unit}")
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${sprayer_deploy}/systemd/sprayer.service)

# Debian wants the changelog and the manual page gzipped with no time stamp; made at
# configure time (tiny).
execute_process(COMMAND gzip -9nc ${PROJECT_SOURCE_DIR}/cmake/deb/changelog
                OUTPUT_FILE ${PROJECT_BINARY_DIR}/install/changelog.gz)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/cmake/deb/changelog)
install(FILES ${PROJECT_BINARY_DIR}/install/changelog.gz DESTINATION ${sprayer_docdir})
execute_process(COMMAND gzip -9nc ${PROJECT_SOURCE_DIR}/docs/sprayer.8 OUTPUT_FILE ${PROJECT_BINARY_DIR}/install/sprayer.8.gz)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/docs/sprayer.8)
install(FILES ${PROJECT_BINARY_DIR}/install/sprayer.8.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)

# Prefix-dependent at install time: the prefix may be given to `cmake --install` or by CPack.
install(CODE "set(sprayer_deploy \"${sprayer_deploy}\")\nset(sprayer_unit_in \"${PROJECT_BINARY_DIR}/install/sprayer.service.in\")\nset(sprayer_sbin_configured \"${CMAKE_INSTALL_FULL_SBINDIR}\")")
install(CODE [[
  if(CMAKE_INSTALL_PREFIX MATCHES "^/(usr/?)?$")
    set(sprayer_etc /etc)
    set(sprayer_var /var)
  else()
    set(sprayer_etc "${CMAKE_INSTALL_PREFIX}/etc")
    set(sprayer_var "${CMAKE_INSTALL_PREFIX}/var")
  endif()
  file(READ "${sprayer_unit_in}" unit)
  string(REPLACE "${sprayer_sbin_configured}/sprayer" "${CMAKE_INSTALL_PREFIX}/sbin/sprayer" unit "${unit}")
  string(REPLACE " /etc/sprayer/sprayer.yaml" " ${sprayer_etc}/sprayer/sprayer.yaml" unit "${unit}")
  file(WRITE "${CMAKE_CURRENT_BINARY_DIR}/install/sprayer.service" "${unit}")
  file(INSTALL DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/systemd/system" TYPE FILE
       FILES "${CMAKE_CURRENT_BINARY_DIR}/install/sprayer.service")
  file(INSTALL DESTINATION "${sprayer_etc}/sprayer" TYPE FILE FILES "${sprayer_deploy}/sprayer.yaml")
  file(INSTALL DESTINATION "${sprayer_etc}/logrotate.d" TYPE FILE FILES "${sprayer_deploy}/logrotate/sprayer")
  # Empty; the package's postinst (or the unit's StateDirectory/LogsDirectory) gives them
  # to the sprayer user.
  file(MAKE_DIRECTORY "$ENV{DESTDIR}${sprayer_var}/lib/sprayer" "$ENV{DESTDIR}${sprayer_var}/log/sprayer")
]])

# The Debian package, from the build tree as it is (no second compile): cpack -G DEB.
# Installing builds nothing (cpack would otherwise build every target, tests included);
# build sprayer first.
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY ON)
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME sprayer)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "sprayer maintainers <maintainers@users.noreply.r-seed-74e2cec3.example>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Layer-7 front end for HCL Traveler HA pools")
set(CPACK_PACKAGE_DESCRIPTION "sprayer terminates the devices' connections, finds the user in each
ActiveSync or Traveler request and sends it to the pool server that owns
that user, read from the pool's ownership table (SQLite or PostgreSQL).
It holds tens of thousands of parked ActiveSync Ping requests per
instance and exports Prometheus metrics.")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)  # dpkg-shlibdeps on the built binary
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "logrotate")
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://sprayer.invalid/")
set(CPACK_STRIP_FILES ON)
set(CPACK_SET_DESTDIR ON)  # install with DESTDIR, so the /etc and /var rules above hold
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${PROJECT_SOURCE_DIR}/cmake/deb/conffiles ${PROJECT_SOURCE_DIR}/cmake/deb/postinst
    ${PROJECT_SOURCE_DIR}/cmake/deb/prerm ${PROJECT_SOURCE_DIR}/cmake/deb/postrm)
include(CPack)
