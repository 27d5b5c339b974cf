package sandbox

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// seedFile is one entry of the tree that inner.sh copies over the sandbox's
// root before boot (after /etc/systemd/system got its fresh tmpfs).
type seedFile struct {
	Path string // relative to the root: "etc/systemd/system/sandbox.target"
	Data []byte // file content, when Link is empty
	Link string // symlink target; "/dev/null" masks a unit or generator
}

// kernelUnits touch the kernel or hardware and would act on the host, or
// wait for something a container never has. They are masked in every
// sandbox.
var kernelUnits = []string{
	"dev-hugepages.mount",
	"proc-sys-fs-binfmt_misc.automount",
	"proc-sys-fs-binfmt_misc.mount",
	"sys-fs-fuse-connections.mount",
	"sys-kernel-config.mount",
	"sys-kernel-debug.mount",
	"sys-kernel-tracing.mount",
	"kmod-static-nodes.service",
	"systemd-binfmt.service",
	"systemd-modules-load.service",
	"systemd-sysctl.service",
	"systemd-firstboot.service",
	"systemd-machine-id-commit.service",
	"systemd-pcrphase.service",
	"systemd-pcrphase-initrd.service",
	"systemd-pcrphase-sysinit.service",
	"systemd-repart.service",
	"systemd-random-seed.service",
	"systemd-remount-fs.service",
	"systemd-pstore.service",
	"systemd-timesyncd.service",
	"systemd-hwdb-update.service",
	"systemd-journald-audit.socket",
	"systemd-ask-password-console.path",
	"systemd-ask-password-console.service",
	"systemd-ask-password-wall.path",
	"systemd-ask-password-wall.service",
	"getty.target",
	"getty-static.service",
	"console-getty.service",
	"container-getty@.service",
	"serial-getty@.service",
	"getty@.service",
}

// hostServiceUnits belong to services installed on the host. They are
// masked even though the fresh /etc/systemd/system drops the host's
// enablement links, since a generator or a Wants= in /lib could still pull
// them in.
var hostServiceUnits = []string{
	"postgresql.service",
	"postgresql@.service",
}

// keepUnits are never masked, even when the host enables them: the sandbox
// needs them.
var keepUnits = []string{
	"dbus.service",
	"dbus.socket",
	"systemd-journald.service",
	"systemd-journald.socket",
	"systemd-journald-dev-log.socket",
}

// hostGenerators are generators of host services; they stay masked when
// Options.RunGenerators is set.
var hostGenerators = []string{"postgresql-generator"}

// generatorDirs are where systemd 252 looks for system generators.
var generatorDirs = []string{
	"/etc/systemd/system-generators",
	"/usr/local/lib/systemd/system-generators",
	"/lib/systemd/system-generators",
	"/usr/lib/systemd/system-generators",
}

const sandboxTarget = `[Unit]
Description=resil e2e sandbox
Documentation=file:///resil/e2e/sandbox
Requires=basic.target
After=basic.target
Wants=dbus.socket dbus.service
After=dbus.socket dbus.service
AllowIsolate=yes
`

const journaldConf = `[Journal]
Storage=volatile
RateLimitIntervalSec=0
`

// seedSpec is everything the seed depends on; hostUnits and generators come
// from the host, the rest from Start.
type seedSpec struct {
	ID            string
	MachineID     string   // 32 hex digits
	HostUnits     []string // units the host enables (see enabledHostUnits)
	Generators    []string // file names of the host's generators
	RunGenerators bool
}

// seed returns the files to copy into the sandbox's root, sorted by path.
// It does no I/O.
func seed(spec seedSpec) []seedFile {
	files := []seedFile{
		{Path: "etc/hostname", Data: []byte(spec.ID + "\n")},
		{Path: "etc/machine-id", Data: []byte(spec.MachineID + "\n")},
		{Path: "etc/systemd/journald.conf.d/resil-sandbox.conf", Data: []byte(journaldConf)},
		{Path: "etc/systemd/system/sandbox.target", Data: []byte(sandboxTarget)},
		{Path: "etc/systemd/system/default.target", Link: "sandbox.target"},
	}
	for _, u := range maskedUnits(spec.HostUnits) {
		files = append(files, seedFile{Path: "etc/systemd/system/" + u, Link: "/dev/null"})
	}
	for _, g := range maskedGenerators(spec.Generators, spec.RunGenerators) {
		files = append(files, seedFile{Path: "etc/systemd/system-generators/" + g, Link: "/dev/null"})
	}
	slices.SortFunc(files, func(a, b seedFile) int { return strings.Compare(a.Path, b.Path) })
	return files
}

// maskedUnits returns the sorted, unique units to mask: kernelUnits,
// hostServiceUnits and every non-target unit the host enables, but never
// keepUnits.
func maskedUnits(hostUnits []string) []string {
	var out []string
	out = append(out, kernelUnits...)
	out = append(out, hostServiceUnits...)
	for _, u := range hostUnits {
		if strings.HasSuffix(u, ".target") || !validUnitName(u) {
			continue
		}
		out = append(out, u)
	}
	out = slices.DeleteFunc(out, func(u string) bool { return slices.Contains(keepUnits, u) })
	slices.Sort(out)
	return slices.Compact(out)
}

// maskedGenerators returns the sorted, unique generators to mask: all of
// them, or only hostGenerators when run is set.
func maskedGenerators(all []string, run bool) []string {
	out := slices.Clone(hostGenerators)
	if !run {
		out = append(out, all...)
	}
	out = slices.DeleteFunc(out, func(g string) bool { return g == "" || strings.ContainsAny(g, "/\x00") })
	slices.Sort(out)
	return slices.Compact(out)
}

func validUnitName(u string) bool {
	return u != "" && u != "." && u != ".." && !strings.ContainsAny(u, "/\x00\n")
}

// enabledHostUnits lists the units that the host enables through
// <etcDir>/*.wants and *.requires (etcDir is /etc/systemd/system).
// A missing directory yields nothing.
func enabledHostUnits(etcDir string) []string {
	var out []string
	for _, pattern := range []string{"*.wants", "*.requires"} {
		dirs, _ := filepath.Glob(filepath.Join(etcDir, pattern))
		for _, d := range dirs {
			entries, err := os.ReadDir(d)
			if err != nil {
				continue
			}
			for _, e := range entries {
				out = append(out, e.Name())
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// hostGeneratorNames lists the file names in generatorDirs.
func hostGeneratorNames() []string {
	var out []string
	for _, d := range generatorDirs {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// writeSeed writes files below dir, with directories mode 0755 (cp -a in
// inner.sh copies their modes onto the sandbox's root).
func writeSeed(dir string, files []seedFile) error {
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("chmod seed dir: %w", err)
	}
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := mkdirAll755(dir, filepath.Dir(p)); err != nil {
			return err
		}
		if f.Link != "" {
			if err := os.Symlink(f.Link, p); err != nil {
				return fmt.Errorf("write seed: %w", err)
			}
			continue
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			return fmt.Errorf("write seed: %w", err)
		}
	}
	return nil
}

// mkdirAll755 creates dir and its parents below base with mode 0755
// regardless of the umask.
func mkdirAll755(base, dir string) error {
	rel, err := filepath.Rel(base, dir)
	if err != nil {
		return fmt.Errorf("seed dir %s: %w", dir, err)
	}
	cur := base
	for _, c := range strings.Split(rel, string(filepath.Separator)) {
		if c == "." {
			continue
		}
		cur = filepath.Join(cur, c)
		if err := os.Mkdir(cur, 0o755); err != nil {
			if os.IsExist(err) {
				continue
			}
			return fmt.Errorf("seed dir: %w", err)
		}
		if err := os.Chmod(cur, 0o755); err != nil {
			return fmt.Errorf("seed dir: %w", err)
		}
	}
	return nil
}

// resolvedBind is a Bind checked and resolved on the host.
type resolvedBind struct {
	Host     string // absolute, no symlinks
	Target   string // absolute, clean, not "/"
	Dir      bool
	ReadOnly bool
}

// resolveBinds checks binds and resolves their host paths.
func resolveBinds(binds []Bind) ([]resolvedBind, error) {
	out := make([]resolvedBind, 0, len(binds))
	for _, b := range binds {
		if !filepath.IsAbs(b.Target) || filepath.Clean(b.Target) != b.Target || b.Target == "/" {
			return nil, fmt.Errorf("bind %q: target must be a clean absolute path other than /", b.Target)
		}
		for _, tmp := range []string{"/tmp", "/var/tmp"} {
			if b.Target == tmp || strings.HasPrefix(b.Target, tmp+"/") {
				return nil, fmt.Errorf("bind %q: systemd-tmpfiles cleans %s at boot; bind elsewhere (/srv, /opt)", b.Target, tmp)
			}
		}
		if strings.ContainsRune(b.Host+b.Target, 0) {
			return nil, fmt.Errorf("bind %q: NUL in path", b.Target)
		}
		abs, err := filepath.Abs(b.Host)
		if err != nil {
			return nil, fmt.Errorf("bind %s: %w", b.Target, err)
		}
		host, err := filepath.EvalSymlinks(abs)
		if err != nil {
			return nil, fmt.Errorf("bind %s: %w", b.Target, err)
		}
		fi, err := os.Stat(host)
		if err != nil {
			return nil, fmt.Errorf("bind %s: %w", b.Target, err)
		}
		out = append(out, resolvedBind{Host: host, Target: b.Target, Dir: fi.IsDir(), ReadOnly: b.ReadOnly})
	}
	return out, nil
}

// bindScript returns the shell lines that inner.sh sources to apply binds.
// It does no I/O.
func bindScript(binds []resolvedBind) []byte {
	var b bytes.Buffer
	b.WriteString("# generated by package sandbox: one bind() call per Bind\n")
	for _, r := range binds {
		kind, mode := "file", "rw"
		if r.Dir {
			kind = "dir"
		}
		if r.ReadOnly {
			mode = "ro"
		}
		fmt.Fprintf(&b, "bind %s %s %s %s\n", shellQuote(r.Host), shellQuote(r.Target), kind, mode)
	}
	return b.Bytes()
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
