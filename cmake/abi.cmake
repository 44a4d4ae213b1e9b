# The ABI baseline (README.md, "ABI policy").
#
# abi/<MAJOR>.<MINOR>/ holds, for each release that set a baseline, the abidw
# dump of libsae.so (libsae.abi) and the public header as released
# (include/libsae/sae.h). SAE_ABI_BASELINE is the newest baseline of this
# SONAME that is not newer than the version being built; tests/abi compares the
# build against it and builds a consumer against its frozen header.
#
# At release time only, regenerate the baseline of this MAJOR.MINOR from a
# build with debug information:
#
#     cmake --preset default && cmake --build build --target abi-baseline
#
# and commit abi/. Never regenerate it to make the abidiff test pass: a failure
# there means the change breaks programs built against the release.

set(SAE_ABI_BASELINE "")
file(GLOB _sae_abi_dumps CONFIGURE_DEPENDS RELATIVE ${PROJECT_SOURCE_DIR}/abi ${PROJECT_SOURCE_DIR}/abi/*/libsae.abi)
foreach(_dump IN LISTS _sae_abi_dumps)
  get_filename_component(_ver ${_dump} DIRECTORY)
  if(_ver MATCHES "^${PROJECT_VERSION_MAJOR}\\.[0-9]+$"
     AND _ver VERSION_LESS_EQUAL "${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR}"
     AND (NOT SAE_ABI_BASELINE OR _ver VERSION_GREATER SAE_ABI_BASELINE_VERSION))
    set(SAE_ABI_BASELINE_VERSION ${_ver})
    set(SAE_ABI_BASELINE ${PROJECT_SOURCE_DIR}/abi/${_ver})
  endif()
endforeach()
if(SAE_ABI_BASELINE)
  message(STATUS "libsae: ABI baseline ${SAE_ABI_BASELINE_VERSION} (abi/${SAE_ABI_BASELINE_VERSION})")
else()
  message(STATUS "libsae: no ABI baseline for libsae.so.${PROJECT_VERSION_MAJOR} in abi/ yet")
endif()

find_program(SAE_ABIDW abidw)
find_program(SAE_ABIDIFF abidiff)
if(TARGET sae AND SAE_ABIDW)
  add_custom_target(abi-baseline
    COMMAND sh ${PROJECT_SOURCE_DIR}/cmake/abi.sh baseline $<TARGET_FILE:sae>
            ${PROJECT_SOURCE_DIR}/include/libsae
            ${PROJECT_SOURCE_DIR}/abi/${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR}
    COMMENT "Writing the ABI baseline abi/${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR}/ (release time only)"
    VERBATIM)
  add_dependencies(abi-baseline sae)
  if(TARGET sae_mpi) # the companion library's dump beside libsae's
    add_custom_command(TARGET abi-baseline POST_BUILD
      COMMAND sh ${PROJECT_SOURCE_DIR}/cmake/abi.sh dump $<TARGET_FILE:sae_mpi>
              ${PROJECT_SOURCE_DIR}/include/libsae
              ${PROJECT_SOURCE_DIR}/abi/${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR}/libsae-mpi.abi
      VERBATIM)
    add_dependencies(abi-baseline sae_mpi)
  endif()
endif()
