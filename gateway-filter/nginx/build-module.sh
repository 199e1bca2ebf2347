#!/usr/bin/env bash
# Builds ngx_http_authz_filter_module.so the way Debian builds its nginx
# modules (dh_nginx): nginx's configure from the nginx-dev package, run with
# the installed nginx's own flags (conf_flags, --with-compat), so that the
# module's signature matches the nginx that loads it. CMake calls it; by hand:
#
#   build-module.sh BUILD_DIR OUT_SO "CFLAGS" "LIBS"
#
# BUILD_DIR holds a copy of nginx's sources and objects (configure writes
# into the tree it runs in, and /usr/share/nginx/src is not ours); configure
# runs again only when its inputs change.
set -euo pipefail

die() { echo "build-module: $*" >&2; exit 1; }

[ $# -eq 4 ] || die "usage: build-module.sh BUILD_DIR OUT_SO CFLAGS LIBS"
build=$1 out=$2 cflags=$3 libs=$4
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
ngx_src=${NGINX_DEV_SRC:-/usr/share/nginx/src}

[ -x "$ngx_src/configure" ] && [ -f "$ngx_src/conf_flags" ] ||
    die "$ngx_src/configure not found: install Debian's nginx-dev (tools/setup does)"

mkdir -p "$build"
stamp="$build/configure.stamp"
want=$(printf '%s\n' "$ngx_src" "$cflags" "$libs" "$(cat "$ngx_src/conf_flags")" \
       "$(cat "$here/config")" | sha256sum | cut -d' ' -f1)
if [ ! -f "$build/objs/Makefile" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    rm -rf "$build/src" "$build/objs"
    mkdir -p "$build/src"
    cp -a "$ngx_src/." "$build/src/"
    # shellcheck disable=SC1091
    (cd "$build/src" && . ./conf_flags &&
     AUTHZ_NGX_INCS="$repo" AUTHZ_NGX_LIBS="$libs" ./configure \
        --with-cc-opt="-g -O2 -fPIC -fstack-protector-strong -D_FORTIFY_SOURCE=2 $cflags" \
        --with-ld-opt="-Wl,-z,relro -Wl,-z,now -fPIC" \
        "${NGX_CONF_FLAGS[@]}" \
        --add-dynamic-module="$here" \
        --builddir="$build/objs" >"$build/configure.log" 2>&1) ||
        { tail -30 "$build/configure.log" >&2; die "nginx's configure failed ($build/configure.log)"; }
    echo "$want" >"$stamp"
fi
# The static libraries may have changed under an unchanged Makefile.
rm -f "$build/objs/ngx_http_authz_filter_module.so"
make -s -C "$build/src" -f "$build/objs/Makefile" modules >"$build/make.log" 2>&1 ||
    { cat "$build/make.log" >&2; die "make modules failed"; }
mkdir -p "$(dirname "$out")"
cp "$build/objs/ngx_http_authz_filter_module.so" "$out.tmp"
mv "$out.tmp" "$out"
