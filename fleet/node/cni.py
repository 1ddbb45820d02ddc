"""A replica's own network namespace, as node scripts (values) and the parser of what they print; no I/O here.

`attach_script` creates `/run/netns/fleet-<container>` (`ip netns add`) and runs the CNI `bridge` plugin in it by
hand (Debian's containernetworking-plugins 1.1 in /usr/lib/cni, FACTS §12): the node's `fleet0` bridge, host-local
IPAM on the node's subnet. Its host ports are fleet's own DNAT rules, one per port, added in one `iptables-restore`
(the `portmap` plugin it replaces ran about twenty iptables commands per start and again per stop, each reading the
whole ruleset, so their cost grew with the containers on the node): each host port → its container port, on the
node's inventory address only when it is an IP address (HAProxy and the health checks use that address and the host
port, and nothing on the node's other addresses reaches it). The node's own rules are made once, by the first start
(`fleet_cni_node`): the jumps into fleet's DNAT chain, forwarding into the bridge only for connections a container or
a port mapping opened (what the `firewall` plugin did per container), a drop of any other new connection forwarded
into the bridge from outside it (other nodes reach a container only through its mapped host port), the masquerade of
the node subnet's outbound traffic, and of a container's connection to a host port of its own node (hairpin). The
container joins the namespace (`ctr run --with-ns network:PATH`) in the same round trip (`attach_and`). What DEL
needs (the bridge's configuration and the rules to delete, then the result) is written to fleet's cache directory on
the node *before* ADD runs, so a controller killed in between leaves something `sweep_script` can tear down: the
rules deleted, CNI DEL with the cached prevResult, then `ip netns delete` (which takes the veth with it). Only what
fleet made is touched: namespaces named `fleet-*` and cache entries of containers fleet no longer has on the node,
and the rules that name the container. Entries made by fleet before its own port rules carry the portmap and firewall
plugins' configurations: their DEL runs those plugins as before.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from fleet.core.dirs import NODE_BASE
from fleet.core.errors import RuntimeCommandError
from fleet.core.model import CommandResult
from fleet.core.shell import Script
from fleet.node.runtime.base import Call, parse_ok

CNI_PATH = "/usr/lib/cni"
CNI_VERSION = "1.0.0"
NETWORK = "fleet"
BRIDGE = "fleet0"
# fleet's DNAT chain of host ports (nat table), jumped to for the node's own addresses.
CHAIN = "FLEET-HOSTPORTS"
NETNS_DIR = "/run/netns"
NETNS_PREFIX = "fleet-"
CACHE_DIR = f"{NODE_BASE}/cni"
# Each node's containers get a /24 of this range by the node's index (its place in the inventory).
DEFAULT_RANGE = "10.88.0.0/16"
RESULT_MARK = "@@cni-result"
T = TypeVar("T")


@dataclass(frozen=True)
class PortMap:
    """A host port on the node mapped to a port inside the container (TCP), on the node address `host_ip` only
    when given (the address HAProxy and the health checks reach the node at), else on every address."""

    host: int
    container: int
    host_ip: str | None = None


def bound_address(address: str) -> str | None:
    """The address a replica's host port is bound to: the node's inventory address when it is an IPv4 literal
    (what HAProxy and the health checks connect to), else None (a host name: every address, as the node resolves
    it is not known here)."""
    try:
        return address if isinstance(ipaddress.ip_address(address), ipaddress.IPv4Address) else None
    except ValueError:
        return None


def netns_name(container: str) -> str:
    return f"{NETNS_PREFIX}{container}"


def netns_path(container: str) -> str:
    return f"{NETNS_DIR}/{netns_name(container)}"


def node_subnet(index: int, base: str = DEFAULT_RANGE) -> str:
    """The `index`th /24 of `base` (the subnet of one node's containers); it only has to differ from the
    node's own networks."""
    net = ipaddress.ip_network(base)
    if net.prefixlen > 24:
        return str(net)
    # Past the last, they repeat: harmless, since containers are never routed between nodes. (Computed, not
    # listed: a /16 has 256 of them, and every start asks.)
    count = 1 << (24 - net.prefixlen)
    return str(ipaddress.ip_network((int(net.network_address) + (index % count) * 256, 24)))


def _dumps(conf: object) -> str:
    return json.dumps(conf, sort_keys=True, separators=(",", ":"))


def bridge_conf(subnet: str, cache_dir: str = CACHE_DIR) -> str:
    return _dumps({
        "cniVersion": CNI_VERSION, "name": NETWORK, "type": "bridge", "bridge": BRIDGE, "isGateway": True,
        "ipMasq": False, "hairpinMode": True,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}],
                 "dataDir": f"{cache_dir}/ipam"},
    })


# sh functions shared by the scripts. A cache entry is $CACHE/run/ID: line 1 the bridge's configuration, lines 2-3
# empty (an entry from before fleet's own port rules: the portmap and firewall configurations), line 4 (once ADD
# succeeded) the chain's result; $CACHE/ports/ID holds the iptables-restore input that deletes its port rules. A
# plugin gets its configuration on stdin with "prevResult" put before its last character (the configurations are
# compact JSON objects: "}"). A DEL is attempted even without a result (ADD was cut short): the plugins then release
# what they find by container ID. Under `set -e` (PREPARE_NODE) a failed DEL must not end the script: `|| :`.
CNI_FUNCTIONS = r"""
# The CNI spec lets a runtime run ADD and DEL for different containers at once (the plugins lock what they share:
# host-local its IPAM files, iptables its tables), but not beside GC. So `-s`, shared: an ADD once the node's
# network is made, a DEL. Exclusive: the sweep (GC), and an ADD that makes the bridge and the node's rules (first
# use, or after a reboot), where racing starts would add the rules twice. Held until `exec 9>&-` or the end.
fleet_cni_lock() { # [-s]
  exec 9>"$CACHE/.lock" && flock ${1:-} -w 60 9 || { echo "cni: no lock on $CACHE/.lock within 60 s" >&2; exit 1; }
}
fleet_cni() { # COMMAND ID PLUGIN CONF PREV
  c=$4
  [ -n "$5" ] && c="${4%?},\"prevResult\":$5}"
  CNI_COMMAND=$1 CNI_CONTAINERID=$2 CNI_NETNS=$NETNS_DIR/fleet-$2 CNI_IFNAME=eth0 CNI_PATH=$CNI_PATH \
    "$CNI_PATH/$3" <<FLEET_CONF
$c
FLEET_CONF
}
fleet_cni_unports() { # ID: delete its port rules (one by one when the batch fails: one of them is gone already)
  f=$CACHE/ports/$1
  [ -f "$f" ] || return 0
  if ! iptables-restore -w --noflush <"$f" 2>/dev/null; then
    grep '^-D ' "$f" | while read -r rule; do iptables -w -t nat $rule 2>/dev/null || :; done
  fi
  rm -f "$f"
}
fleet_cni_del() { # ID
  fleet_cni_unports "$1"
  f=$CACHE/run/$1
  if [ -f "$f" ]; then
    b= p= w= r=
    { read -r b; read -r p; read -r w; read -r r; } <"$f" || :
    [ -n "$w" ] && fleet_cni DEL "$1" firewall "$w" "$r" >/dev/null 2>&1 || :
    [ -n "$p" ] && fleet_cni DEL "$1" portmap "$p" "$r" >/dev/null 2>&1 || :
    [ -n "$b" ] && fleet_cni DEL "$1" bridge "$b" "$r" >/dev/null 2>&1 || :
  fi
  if [ -e "$NETNS_DIR/fleet-$1" ]; then ip netns delete "fleet-$1" 2>/dev/null || rm -f "$NETNS_DIR/fleet-$1"; fi
  rm -f "$f"
}
"""

ATTACH_SH = CNI_FUNCTIONS + r"""
set -u
[ -d "$CACHE/ports" ] || mkdir -p "$CACHE/run" "$CACHE/ipam" "$CACHE/ports" || exit 1
if [ -e "$NETNS_DIR/fleet-$ID" ] || [ -e "$CACHE/run/$ID" ]; then
  echo "cni: fleet-$ID: already exists" >&2; exit 17
fi
# The node's network is made when its bridge is the one the last exclusive ADD recorded (its MAC address, random
# per bridge: a reboot or a new bridge does not match). Shell patterns rather than sed and cat: every start runs it.
fleet_cni_made() {
  made=$(ip -o link show dev "$BRIDGE" 2>/dev/null)
  case $made in *" link/ether "*) made=${made#* link/ether }; made=${made%% *} ;; *) made= ;; esac
}
fleet_cni_made
was=
read -r was 2>/dev/null <"$CACHE/.made" || :
if [ -n "$made" ] && [ "$made" = "$was" ]; then fleet_cni_lock -s
else fleet_cni_lock; made=; fi
# The node keeps the subnet its bridge already has (another run, or another inventory's order, may propose
# another): the bridge's gateway address x.y.z.1/24 gives x.y.z.0/24.
gw=$(ip -4 -o addr show dev "$BRIDGE" 2>/dev/null)
case $gw in *" inet "*) gw=${gw#* inet }; gw=${gw%% *} ;; *) gw= ;; esac
if [ -n "$gw" ] && [ "${gw%.*}.0/${gw#*/}" != "$SUBNET" ]; then
  BRIDGE_CONF=$(printf '%s' "$BRIDGE_CONF" | sed "s#\"$SUBNET\"#\"${gw%.*}.0/${gw#*/}\"#g")
  SUBNET=${gw%.*}.0/${gw#*/}
fi
printf '%s\n\n\n' "$BRIDGE_CONF" >"$CACHE/run/$ID" || exit 1
# A plugin's error is a JSON object over several lines: one line, so the message that names it is whole.
fail() { echo "cni: $(printf '%s' "$1" | tr '\n' ' ')" >&2; fleet_cni_del "$ID"; exit 1; }
# The node's own rules, each added unless it is there (-I: ahead of a DROP policy's chains, such as Docker's).
fleet_rule() { # TABLE -A|-I CHAIN RULE…
  t=$1 op=$2; shift 2
  iptables -w -t "$t" -C "$@" 2>/dev/null || iptables -w -t "$t" "$op" "$@"
}
fleet_cni_node() {
  iptables -w -t nat -N "$CHAIN" 2>/dev/null
  fleet_rule nat -A PREROUTING -m addrtype --dst-type LOCAL -j "$CHAIN" &&
  fleet_rule nat -A OUTPUT -m addrtype --dst-type LOCAL -j "$CHAIN" &&
  fleet_rule nat -A POSTROUTING -s "$SUBNET" ! -d "$SUBNET" \
    -m comment --comment "fleet: containers out through the node" -j MASQUERADE &&
  fleet_rule nat -A POSTROUTING -o "$BRIDGE" -s "$SUBNET" -m conntrack --ctstate DNAT \
    -m comment --comment "fleet: a container to a host port of its node" -j MASQUERADE &&
  fleet_rule nat -A POSTROUTING -o "$BRIDGE" -s 127.0.0.0/8 -m comment --comment "fleet: the node to a host port" \
    -j MASQUERADE &&
  fleet_rule filter -I FORWARD -i "$BRIDGE" -m comment --comment "fleet: from containers" -j ACCEPT &&
  fleet_rule filter -I FORWARD -o "$BRIDGE" -m conntrack --ctstate RELATED,ESTABLISHED,DNAT \
    -m comment --comment "fleet: to containers, what they or a port mapping opened" -j ACCEPT &&
  fleet_rule filter -I FORWARD -o "$BRIDGE" ! -i "$BRIDGE" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT \
    -m comment --comment "fleet: containers only through mapped ports" -j DROP
}
ip netns add "fleet-$ID" || fail "ip netns add fleet-$ID failed"
ip -n "fleet-$ID" link set lo up || fail "lo up failed"
r=$(fleet_cni ADD "$ID" bridge "$BRIDGE_CONF" "" 2>&1) || fail "bridge: $r"
# The result on one line (JSON holds no newline inside a string), and the first address of its "ips", with
# shell patterns: no process started for either (each one waits its turn for a CPU on a busy node).
one= rest=$r
while [ -n "$rest" ]; do
  case $rest in *"
"*) one=$one${rest%%"
"*}; rest=${rest#*"
"} ;; *) one=$one$rest; rest= ;; esac
done
r=$one
if [ -z "$made" ]; then fleet_cni_node || fail "iptables: cannot add the node's rules"; fi
# PORTS: HOST:CONTAINER:ADDRESS… (ADDRESS empty: every local address). The rules that delete them are on disk first.
cip=
case $r in
  *'"ips":'*'"address":'*) cip=${r#*'"ips":'}; cip=${cip#*'"address":'}; cip=${cip#*'"'}; cip=${cip%%/*} ;;
esac
case $cip in *[!0-9.]*) cip= ;; esac
[ -n "$cip" ] || fail "bridge: no IPv4 address in its result: $r"
add= del=
for p in $PORTS; do
  h=${p%%:*}; a=${p#*:}; c=${a%%:*}; a=${a#*:}
  rule="$CHAIN ${a:+-d $a/32 }-p tcp -m tcp --dport $h -m comment --comment fleet:$ID"
  rule="$rule -j DNAT --to-destination $cip:$c"
  add="$add-A $rule
" del="$del-D $rule
"
done
if [ -n "$add" ]; then
  printf '*nat\n%sCOMMIT\n' "$del" >"$CACHE/ports/$ID" || fail "cannot write the cache"
  add="*nat
${add}COMMIT"
  # The node's rules gone since (iptables flushed by hand): made again, once.
  fleet_cni_ports() { iptables-restore -w --noflush "$@" <<FLEET_RULES
$add
FLEET_RULES
  }
  fleet_cni_ports 2>/dev/null || { fleet_cni_node && fleet_cni_ports; } || fail "iptables: cannot add the port rules"
fi
printf '%s\n' "$r" >>"$CACHE/run/$ID" || fail "cannot write the cache"
if [ -z "$made" ]; then
  fleet_cni_made
  { printf '%s\n' "$made" >"$CACHE/.made.$$" && mv -f "$CACHE/.made.$$" "$CACHE/.made"; } || :
fi
exec 9>&-
echo '@@cni-result'
printf '%s\n' "$r"
"""

DETACH_SH = CNI_FUNCTIONS + r"""
mkdir -p "$CACHE" && fleet_cni_lock -s
for id in $IDS; do fleet_cni_del "$id"; done
"""

# Under the fleet's lease, with the node's containers as this run observed them: the namespace and CNI state of
# any other container fleet attached (a replica removed while its controller was killed, a container deleted by
# hand) is torn down.
SWEEP_BODY = r"""
mkdir -p "$CACHE" && fleet_cni_lock
for f in "$CACHE"/run/* "$NETNS_DIR"/fleet-*; do
  [ -e "$f" ] || continue
  case $f in "$NETNS_DIR"/fleet-*) id=${f#"$NETNS_DIR"/fleet-} ;; *) id=${f##*/} ;; esac
  case " $KEEP " in *" $id "*) ;; *) fleet_cni_del "$id"; echo "swept $id" ;; esac
done
"""
SWEEP_SH = CNI_FUNCTIONS + SWEEP_BODY


def cni_env(cache_dir: str = CACHE_DIR) -> dict[str, str]:
    """The variables CNI_FUNCTIONS read (a script that embeds them passes these)."""
    return {"CACHE": cache_dir, "NETNS_DIR": NETNS_DIR, "CNI_PATH": CNI_PATH}


def attach_script(container: str, subnet: str, ports: Sequence[PortMap], cache_dir: str = CACHE_DIR) -> Script:
    """Create the container's namespace and run the CNI chain in it; prints RESULT_MARK, then the result."""
    env = {**cni_env(cache_dir), "ID": container, "BRIDGE": BRIDGE, "SUBNET": subnet, "CHAIN": CHAIN,
           "BRIDGE_CONF": bridge_conf(subnet, cache_dir),
           "PORTS": " ".join(f"{p.host}:{p.container}:{p.host_ip or ''}" for p in ports)}
    return Script(ATTACH_SH, env, name="fleet-cni-attach")


def attach_and(call: Call[T], container: str, subnet: str, ports: Sequence[PortMap],
               cache_dir: str = CACHE_DIR) -> Call[tuple[str, T]]:
    """`attach_script`, then `call` (the runtime's start of the container, a Script reading `$ID` as the
    container) in one round trip; when `call` fails, the namespace is torn down before the script exits with
    its status. Parses to (the container's IP, what `call` parses to)."""
    attach = attach_script(container, subnet, ports, cache_dir)
    inner = call.command
    if not isinstance(inner, Script) or inner.env.get("ID", container) != container:
        raise ValueError("attach_and needs a script for the same container ID")
    text = (attach.text + "(\n" + inner.text + "\n) || { rc=$?; fleet_cni_del \"$ID\" >/dev/null 2>&1; "
            'exit "$rc"; }\n')

    def parse(result: CommandResult) -> tuple[str, T]:
        head, mark, rest = result.stdout.partition(RESULT_MARK + "\n")
        if not mark:
            return parse_attach(result), call.parse(result)  # parse_attach raises: the chain failed
        line, _, after = rest.partition("\n")
        ip = parse_attach(replace(result, stdout=f"{RESULT_MARK}\n{line}\n", stderr="", exit_status=0))
        return ip, call.parse(replace(result, stdout=head + after))

    return Call(Script(text, {**inner.env, **attach.env}, name="fleet-cni-run"), parse, call.stdin_path,
                what=call.what)


def detach(containers: Sequence[str], cache_dir: str = CACHE_DIR) -> Call[None]:
    """`detach_script` with its parser."""
    return Call(detach_script(containers, cache_dir), parse_ok("network teardown"),
                what=f"network teardown {' '.join(containers)}")


def detach_script(containers: Iterable[str], cache_dir: str = CACHE_DIR) -> Script:
    """CNI DEL and `ip netns delete` for each container; nothing for one that has neither (host network)."""
    return Script(DETACH_SH, {**cni_env(cache_dir), "IDS": " ".join(containers)}, name="fleet-cni-detach")


def sweep_script(keep: Iterable[str], cache_dir: str = CACHE_DIR) -> Script:
    """Tear down the namespace and CNI state of every container fleet attached that is not in `keep`."""
    return Script(SWEEP_SH, {**cni_env(cache_dir), "KEEP": " ".join(sorted(set(keep)))}, name="fleet-cni-sweep")


def container_ip(result_json: str) -> str:
    """The container's IPv4 address from a CNI result (the first address on the interface in the sandbox)."""
    data = json.loads(result_json)
    interfaces = data.get("interfaces") or []
    for ip in data.get("ips") or []:
        i = ip.get("interface")
        if isinstance(i, int) and 0 <= i < len(interfaces) and interfaces[i].get("sandbox"):
            return str(ip["address"]).split("/")[0]
    raise ValueError("no address on the container's interface in the CNI result")


def parse_attach(result: CommandResult) -> str:
    """The attach script's output → the container's IP; a failure is a RuntimeCommandError with the reason."""
    if result.error is not None or result.exit_status != 0:
        raise RuntimeCommandError(result.node, "network namespace", result.exit_status,
                                  result.error or result.stderr.strip() or result.stdout.strip())
    _, mark, body = result.stdout.partition(RESULT_MARK + "\n")
    if not mark:
        raise RuntimeCommandError(result.node, "network namespace", 0, "no CNI result printed")
    try:
        return container_ip(body)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RuntimeCommandError(result.node, "network namespace", 0, f"bad CNI result: {exc}") from exc
