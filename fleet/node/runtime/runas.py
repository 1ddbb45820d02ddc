"""A service's `user:` under ctr, as a node script (a value; no I/O here).

containerd 1.6's `ctr run` has no `--user` (only `ctr tasks exec` has one), but it takes the runc binary a container
runs with (`--runc-binary`, kept in the container's runtime options, so the restart monitor uses it too). fleet
gives such a container a short sh wrapper of runc, one per user value: on `create` it sets `process.user` in the
bundle's `config.json` (the shim has mounted the image's root at `rootfs/` by then), on `exec` in the process file
(so `fleet exec` and exec health checks run as the container's user, as `kubectl exec` does), and then runs the
node's own runc with the same arguments. A user is `uid[:gid]` or a name, and a name or a missing group is looked up
in the image's `/etc/passwd` and `/etc/group` as Docker does (no entry for a numeric uid: group 0); a name the image
does not have fails the start, naming it. The supplementary groups are dropped (`--user` in Docker keeps none
either unless the image's /etc/group lists the user, which this does not read).

The JSON is edited with sed: containerd writes `config.json` and the process file compact (`json.Marshal`), and
`"user":{…}` holds numbers and one array only, so its first occurrence is the process's (`process` is the spec's
first object, `user` the process's first; an exec's process file is a process).
"""

from __future__ import annotations

import hashlib
import re

from fleet.core.dirs import NODE_BASE

# What `security.user` may be (fleet.config.spec.security checks it first; this holds it again where it goes into
# a script): a uid or a name, then optionally ':' and a gid or a group name.
USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?$")

RUNAS_SH = r"""#!/bin/sh
# fleet: runc for containers whose service says `user: @USER@` (fleet.node.runtime.runas).
U='@USER@'
PATH=$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
runc=$(command -v runc) || { echo "fleet: no runc on this node" >&2; exit 127; }
bundle= process= cmd= prev=
for a in "$@"; do
  case $prev in
    --bundle|-b) bundle=$a ;;
    --process|-p) process=$a ;;
    --root|--log|--log-format|--criu|--rootless) ;;
    *) case $a in -*) ;; *) [ -n "$cmd" ] || cmd=$a ;; esac ;;
  esac
  case $a in --bundle=*) bundle=${a#--bundle=} ;; --process=*) process=${a#--process=} ;; esac
  prev=$a
done
case $cmd in
  create) file=$bundle/config.json; root=$bundle/rootfs ;;
  exec) file=$process; root=${bundle:-$(pwd)}/rootfs ;;
  *) exec "$runc" "$@" ;;
esac
if [ -n "$file" ] && [ -f "$file" ]; then
  name=${U%%:*} group=
  case $U in *:*) group=${U#*:} ;; esac
  case $name in
    *[!0-9]*)
      line=$(awk -F: -v n="$name" '$1 == n {print $3 ":" $4; exit}' "$root/etc/passwd" 2>/dev/null)
      [ -n "$line" ] || { echo "fleet: user $name is not in the image's /etc/passwd" >&2; exit 1; }
      uid=${line%%:*} gid=${line#*:} ;;
    *)
      uid=$name
      gid=$(awk -F: -v u="$name" '$3 == u {print $4; exit}' "$root/etc/passwd" 2>/dev/null) ;;
  esac
  case $group in
    '') ;;
    *[!0-9]*)
      gid=$(awk -F: -v n="$group" '$1 == n {print $3; exit}' "$root/etc/group" 2>/dev/null)
      [ -n "$gid" ] || { echo "fleet: group $group is not in the image's /etc/group" >&2; exit 1; } ;;
    *) gid=$group ;;
  esac
  case $uid:${gid:=0} in *[!0-9:]*) echo "fleet: bad passwd entry for $U: $uid:$gid" >&2; exit 1 ;; esac
  to="\"user\":{\"uid\":$uid,\"gid\":$gid}"
  sed -i "s/\"user\":{[^}]*}/$to/" "$file" && grep -qF "$to" "$file" \
    || { echo "fleet: cannot set the user in $file" >&2; exit 1; }
fi
exec "$runc" "$@"
"""


def runas_script(user: str) -> tuple[str, str]:
    """(the wrapper's path on a node, its text) for `user`; the name changes with the text, so a wrapper in use is
    never rewritten."""
    if not USER_RE.fullmatch(user):
        raise ValueError(f"user: expected uid[:gid] or a name, got {user!r}")
    text = RUNAS_SH.replace("@USER@", user)
    return f"{NODE_BASE}/bin/runc-as-{hashlib.sha256(text.encode()).hexdigest()[:12]}", text
