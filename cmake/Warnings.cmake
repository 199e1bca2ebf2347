# Warning policy for every target: warnings are errors.
add_compile_options(
  -Wall -Wextra -Werror
  -Wshadow -Wpointer-arith -Wstrict-prototypes -Wmissing-prototypes
  -Wformat=2 -Wno-format-nonliteral -Wvla -Wundef -Wcast-align
  -Wimplicit-fallthrough -Wnull-dereference)
