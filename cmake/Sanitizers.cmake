# AUTHZ_SANITIZE=ON: ASan + UBSan on every target; UB aborts instead of
# printing and continuing, so the test suite fails on it.
option(AUTHZ_SANITIZE "Build with AddressSanitizer and UndefinedBehaviorSanitizer" OFF)
if(AUTHZ_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=all
                      -fno-omit-frame-pointer -O1)
  add_link_options(-fsanitize=address,undefined -fno-sanitize-recover=all)
endif()
