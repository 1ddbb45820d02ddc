"""HAProxy's jail (fleet.node.haproxy.jail) as text, and run for real on this machine (root; no lab, no
HAProxy): a private mount namespace whose root is a read-only tmpfs, HAProxy's directory at its own path, the
haproxy user holding exactly `CAPS`; a process with those credentials that escapes a chroot lands in the jail."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest
from sshserver import SSHFarm

from fleet.core.errors import LbReloadError
from fleet.engine.haproxy import LbNode
from fleet.node.haproxy.jail import CAP_MASK, CAPS, JAIL
from fleet.node.haproxy.scripts import APPLY, LbPaths, apply_script
from fleet.transport import Pool

# linux/capability.h
CAP_BITS = {"net_bind_service": 10, "sys_chroot": 18, "sys_admin": 21, "dac_override": 1, "setuid": 7}


def test_every_remount_of_a_bind_names_bind_and_only_the_jails_own_tmpfs_is_remounted_without() -> None:
    """A remount without `bind` changes the whole filesystem (the node's own / made read-only): only the jail's
    tmpfs, after pivot_root made it `/`, is remounted that way."""
    lines = [ln.strip() for ln in JAIL.splitlines()]
    remounts = [ln for ln in lines if "remount" in ln]
    assert len(remounts) >= 5
    plain = [ln for ln in remounts if "bind" not in ln.split("remount", 1)[1].split()[0]]
    assert plain == ["mount -o remount,ro /"]
    assert lines.index("pivot_root . .old") < lines.index("mount -o remount,ro /")
    assert lines.index("umount -l /.old") < lines.index("mount -o remount,ro /")
    # HAProxy's directory is read-only in the jail, its run/ (the sockets) alone writable; none may exec.
    assert 'mount -o remount,bind,ro,nosuid,nodev,noexec "$J$D"' in lines
    assert 'mount -o remount,bind,nosuid,nodev,noexec "$J$D/run"' in lines


def test_the_caps_are_bounded_ambient_and_the_mask_the_tests_expect() -> None:
    assert CAPS == ("net_bind_service", "sys_chroot")
    assert CAP_MASK == sum(1 << CAP_BITS[c] for c in CAPS) == 0x40400
    setpriv = JAIL[JAIL.index("exec setpriv"):]
    for flag in ("--inh-caps", "--ambient-caps", "--bounding-set"):
        assert f"{flag}=-all,+net_bind_service,+sys_chroot " in setpriv
    assert "--no-new-privs" in setpriv and "--clear-groups" in setpriv and "$CAPS" not in JAIL
    # HAProxy gets a clean environment (nothing of the SSH session's), and its argv after `--`.
    assert setpriv.rstrip().endswith('-- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"')


def test_apply_carries_the_jail_verbatim_in_a_quoted_heredoc_and_every_path_in_env() -> None:
    assert f"jail_sh=$(cat <<'FLEET_JAIL'\n{JAIL}FLEET_JAIL\n)" in APPLY
    assert "FLEET_JAIL" not in JAIL
    script = apply_script(LbPaths("/srv/lb-1/haproxy", user="hx"))
    assert "/srv/lb-1" not in script.text
    env = script.env
    assert (env["RUN"], env["JAIL"], env["CHROOT"]) == ("/srv/lb-1/haproxy/run", "/srv/lb-1/haproxy/jail",
                                                         "/srv/lb-1/haproxy/empty")
    assert (env["MASTER"], env["ADMIN"]) == ("/srv/lb-1/haproxy/run/master.sock", "/srv/lb-1/haproxy/run/admin.sock")
    # Where a root master of an older fleet kept its sockets: found and replaced once.
    assert (env["OLD_MASTER"], env["OLD_ADMIN"]) == ("/srv/lb-1/haproxy/master.sock", "/srv/lb-1/haproxy/admin.sock")
    assert (env["HUSER"], env["CERTS"], env["MAP"]) == ("hx", "/srv/lb-1/haproxy/certs", "/srv/lb-1/haproxy/acme.map")
    assert LbPaths().cert_dir == "/var/lib/fleet/haproxy/certs"


@pytest.mark.parametrize("user", ["root; id", "ha proxy", "$(id)", "", "a\nb"])
def test_a_user_name_that_is_not_a_plain_name_is_refused(user: str) -> None:
    with pytest.raises(ValueError, match="user"):
        LbPaths(user=user)


# Run in the jail as haproxy: what it sees, what it may write, a classic chroot escape (perl's chroot with the
# CAP_SYS_CHROOT the workers hold: chroot into a subdirectory, climb out with .., chroot there), and a user
# namespace asked for from a chroot.
PROBE = r"""
echo "root $(ls -A / | tr '\n' ' ')"
[ -e /etc/shadow ] && echo "shadow visible"
touch "$0/x" 2>/dev/null && echo "wrote the haproxy dir"
touch "$0/run/x" && echo "wrote run"
perl -e 'mkdir "$ARGV[0]/run/esc"; chroot "$ARGV[0]/run/esc" or die "chroot: $!"; chdir ".." for 1 .. 64;
  chroot "." or die; opendir(my $d, "/") or die; print "escaped ", join(" ", sort grep { !/^\.\.?$/ } readdir $d),
  "\n"; print -e "/etc/shadow" ? "escaped shadow\n" : ""' "$0"
# A chrooted process (a worker) may not create a user namespace (at the jail's root it may, if the kernel lets
# unprivileged users): one more reason the workers keep their chroot.
perl -e 'chroot("/usr") or die; chdir("/"); exec "/bin/unshare", "-U", "/bin/true"' 2>/dev/null ||
  echo "no userns in a chroot"
echo end
read -r _
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("perl"), reason="needs root and perl")
def test_the_jail_holds_usr_devices_and_haproxys_dir_as_haproxy_with_two_caps_and_nothing_above(
        tmp_path: Path) -> None:
    uid, gid = pwd.getpwnam("haproxy").pw_uid, grp.getgrnam("haproxy").gr_gid
    d = tmp_path / "hx"
    for sub, mode in (("", 0o750), ("run", 0o700), ("jail", 0o700)):
        (d / sub).mkdir(mode=mode, exist_ok=True)
    os.chown(d, 0, gid)
    os.chown(d / "run", uid, gid)
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", JAIL, "fleet-haproxy-jail", str(d),
            str(d / "jail"), str(uid), str(gid), "/bin/sh", "-c", PROBE, str(d)]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdin is not None
            lines: list[str] = []
            while not lines or lines[-1] not in ("end", ""):
                lines.append(proc.stdout.readline().strip())
            # Every step exec'd in place: the PID started is the one running as haproxy in the jail.
            status = dict(ln.split(":", 1) for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines())
            seen_root = sorted(os.listdir(f"/proc/{proc.pid}/root"))
            proc.stdin.write("\n")
            proc.stdin.close()
            assert proc.wait(timeout=10) == 0, proc.stderr.read() if proc.stderr else ""
        finally:
            if proc.poll() is None:
                proc.kill()
    top = str(d).split("/")[1]
    links = sorted(n for n in ("bin", "sbin", "lib", "lib32", "lib64", "libx32") if os.path.islink(f"/{n}"))
    expected = sorted({"usr", "dev", "etc", top, *links} - ({"etc"} if not os.path.exists("/etc/ssl/openssl.cnf")
                                                           else set()))
    assert lines[0] == "root " + " ".join(expected), lines
    assert seen_root == expected
    assert lines[1:] == ["wrote run", "escaped " + " ".join(expected), "no userns in a chroot", "end"], lines
    assert status["Uid"].split() == [str(uid)] * 4 and status["Gid"].split() == [str(gid)] * 4
    assert status["Groups"].strip() == "" and status["NoNewPrivs"].strip() == "1"
    for field in ("CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"):
        assert int(status[field], 16) == CAP_MASK, (field, status[field])


async def test_apply_refuses_to_run_haproxy_as_root_when_its_user_is_missing_and_names_a_missing_tool(
        tmp_path: Path, farm: SSHFarm, pool: Pool) -> None:
    """No `haproxy` user on the node: apply says so and starts nothing (HAProxy never falls back to root); a
    HAProxy outside what the jail holds (/usr, /bin, /sbin) is named, with nothing started either."""
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy is not installed")
    d = tmp_path / "hx"
    lb = LbNode(pool, farm.node("n1"), base_dir=str(d), haproxy=haproxy, user="fleet-no-such-user")
    text = lb.render([])
    with pytest.raises(LbReloadError, match="HAProxy's user 'fleet-no-such-user' does not exist on n1"):
        await lb.apply(text)
    assert not d.exists()
    outside = tmp_path / "opt" / "haproxy"
    outside.parent.mkdir()
    outside.symlink_to(haproxy)
    lb = LbNode(pool, farm.node("n1"), base_dir=str(d), haproxy=str(outside))
    with pytest.raises(LbReloadError, match=f"cannot build HAProxy's jail, missing: {outside} \\(HAProxy outside"):
        await lb.apply(text)
    assert not d.exists()
