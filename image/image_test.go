package image

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/config"
)

// maxExposure is the highest `systemd-analyze security --offline=yes`
// exposure each unit may score (0 is best, 10 worst; up to 2.0 is "OK").
// Each threshold is the score reached when it was set plus 0.3 of slack, so
// a change that drops a meaningful protection fails the test:
//
//   - keywarden.service reached 1.4 ("OK"). What is left: it needs the
//     network (PrivateNetwork, AF_INET/AF_INET6, no IP allow-list on a public
//     listener), /dev/tpmrm0 (PrivateDevices=no; DevicePolicy=closed instead),
//     and it runs in the host's root (no RootDirectory). PrivateUsers= is off:
//     the TPM device is reached through the tss group.
//   - keywarden-backup.service reached 0.9 ("SAFE").
var maxExposure = map[string]float64{
	"keywarden.service":        1.7,
	"keywarden-backup.service": 1.2,
}

// needTool skips when a Debian tool is missing on a developer's machine,
// and fails under CI (scripts/setup.sh installs it).
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found: scripts/setup.sh installs it (Debian package systemd)", name)
		}
		t.Skipf("%s not found (run scripts/setup.sh)", name)
	}
	return p
}

var overallRE = regexp.MustCompile(`Overall exposure level for (\S+): ([0-9]+(?:\.[0-9]+)?) (\S+)`)

// parseExposure reads the overall score from systemd-analyze's output.
func parseExposure(out string) (unit string, score float64, verdict string, err error) {
	m := overallRE.FindStringSubmatch(out)
	if m == nil {
		return "", 0, "", errors.New("no \"Overall exposure level\" line in systemd-analyze's output")
	}
	score, err = strconv.ParseFloat(m[2], 64)
	return m[1], score, m[3], err
}

func TestImageParseExposure(t *testing.T) {
	tests := []struct {
		name, out string
		unit      string
		score     float64
		wantErr   bool
	}{
		{name: "ok", out: "✗ PrivateNetwork= ...  0.5\n\n→ Overall exposure level for keywarden.service: 1.4 OK 🙂\n", unit: "keywarden.service", score: 1.4},
		{name: "unsafe", out: "→ Overall exposure level for x.service: 9.6 UNSAFE 😨", unit: "x.service", score: 9.6},
		{name: "integer", out: "→ Overall exposure level for y.service: 2 MEDIUM", unit: "y.service", score: 2},
		{name: "missing", out: "Failed to load unit\n", wantErr: true},
		{name: "empty", out: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			unit, score, _, err := parseExposure(tt.out)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && (unit != tt.unit || score != tt.score) {
				t.Errorf("got %s %v, want %s %v", unit, score, tt.unit, tt.score)
			}
		})
	}
}

// analyzeSecurity scores a unit file offline. Any line on stderr (an
// unknown setting, a value systemd cannot parse) is an error: systemd would
// ignore that line and run the service with less protection than written.
func analyzeSecurity(t *testing.T, path string) (float64, string, error) {
	t.Helper()
	bin := needTool(t, "systemd-analyze")
	cmd := exec.Command(bin, "security", "--offline=yes", "--no-pager", path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return 0, "", fmt.Errorf("systemd-analyze security: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		return 0, "", fmt.Errorf("systemd-analyze complains about %s:\n%s", filepath.Base(path), s)
	}
	unit, score, verdict, err := parseExposure(stdout.String())
	if err != nil {
		return 0, "", err
	}
	if unit != filepath.Base(path) {
		return 0, "", fmt.Errorf("scored %s, want %s", unit, filepath.Base(path))
	}
	return score, verdict, nil
}

func TestSystemdSecurityScore(t *testing.T) {
	for unit, limit := range maxExposure {
		t.Run(unit, func(t *testing.T) {
			score, verdict, err := analyzeSecurity(t, unit)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("systemd-analyze security --offline=yes %s: %.1f %s (threshold %.1f)", unit, score, verdict, limit)
			if score > limit {
				t.Errorf("%s exposure %.1f %s is above the threshold %.1f: a protection was dropped (run `make security` to see which)", unit, score, verdict, limit)
			}
		})
	}
}

// TestSystemdSecurityScoreCatchesRegression shows the score check can
// fail: the unit stripped of its sandbox scores past the threshold.
func TestSystemdSecurityScoreCatchesRegression(t *testing.T) {
	needTool(t, "systemd-analyze")
	b, err := os.ReadFile("keywarden.service")
	if err != nil {
		t.Fatal(err)
	}
	var weak []string
	keep := map[string]bool{"Type": true, "ExecStart": true, "User": true, "Group": true, "StateDirectory": true}
	for _, line := range strings.Split(string(b), "\n") {
		k, _, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") || keep[k] {
			weak = append(weak, line)
		}
	}
	p := filepath.Join(t.TempDir(), "keywarden.service")
	if err := os.WriteFile(p, []byte(strings.Join(weak, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	score, _, err := analyzeSecurity(t, p)
	if err != nil {
		t.Fatal(err)
	}
	if score <= maxExposure["keywarden.service"] {
		t.Errorf("an unsandboxed unit scored %.1f, within the threshold %.1f: the check cannot fail", score, maxExposure["keywarden.service"])
	}
}

// unit is a parsed systemd unit file: section → key → values in order.
type unit map[string]map[string][]string

// parseUnit reads a unit file. With uncomment, lines like
// "#LoadCredential=…" (a setting commented out without a space) count too,
// for drop-ins whose optional lines the operator enables.
func parseUnit(text string, uncomment bool) (unit, error) {
	u := unit{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if uncomment && regexp.MustCompile(`^#[A-Z][A-Za-z]+=`).MatchString(line) {
			line = line[1:]
		}
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				return nil, fmt.Errorf("line %d: %q is not key=value inside a section", n, line)
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return u, sc.Err()
}

// last is the effective value of a single-valued setting.
func (u unit) last(section, key string) (string, bool) {
	vs := u[section][key]
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

// systemdSeconds parses a systemd time span ("40s", "1min 30s", "90").
func systemdSeconds(s string) (time.Duration, error) {
	s = strings.ReplaceAll(strings.TrimSpace(s), " ", "")
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	s = strings.ReplaceAll(s, "min", "m")
	return time.ParseDuration(s)
}

// systemdBytes parses a resource limit ("8M", "4096", "infinity").
func systemdBytes(s string) (int64, error) {
	if s == "infinity" {
		return 1 << 62, nil
	}
	mult := int64(1)
	for suffix, m := range map[string]int64{"K": 1 << 10, "M": 1 << 20, "G": 1 << 30} {
		if strings.HasSuffix(s, suffix) {
			s, mult = strings.TrimSuffix(s, suffix), m
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n * mult, err
}

// checkServiceUnit returns every way the unit falls short of issue 7's
// sandbox. Each check names what it guards against.
func checkServiceUnit(u unit) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	want := map[string]string{
		"Type":                    "exec",
		"User":                    "keywarden", // its own user, never root
		"Group":                   "keywarden",
		"DynamicUser":             "no", // a static user owns /var/lib/keywarden across restarts
		"StateDirectory":          "keywarden",
		"UMask":                   "0077",
		"Restart":                 "on-failure",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict", // read-only system
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"DevicePolicy":            "closed", // only DeviceAllow= devices
		"SystemCallArchitectures": "native",
		"MemoryDenyWriteExecute":  "yes",
		"LockPersonality":         "yes",
		"RestrictNamespaces":      "yes",
		"RestrictRealtime":        "yes",
		"RestrictSUIDSGID":        "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectKernelLogs":       "yes",
		"ProtectControlGroups":    "yes",
		"ProtectClock":            "yes",
		"ProtectHostname":         "yes",
		"ProtectProc":             "invisible",
		"ProcSubset":              "pid",
	}
	for k, v := range want {
		if got, ok := u.last("Service", k); !ok || got != v {
			fail("%s=%q, want %q", k, got, v)
		}
	}
	// Empty capability sets: the last assignment must be empty.
	for _, k := range []string{"CapabilityBoundingSet", "AmbientCapabilities"} {
		if got, ok := u.last("Service", k); !ok || got != "" {
			fail("%s=%q, want an empty set", k, got)
		}
	}
	// Only the TPM resource manager.
	if got := u["Service"]["DeviceAllow"]; !slices.Equal(got, []string{"/dev/tpmrm0 rw"}) {
		fail("DeviceAllow=%q, want only /dev/tpmrm0 rw", got)
	}
	if got, _ := u.last("Service", "RestrictAddressFamilies"); !sameWords(got, "AF_INET AF_INET6 AF_UNIX") {
		fail("RestrictAddressFamilies=%q, want AF_INET AF_INET6 AF_UNIX", got)
	}
	var allow, deny bool
	for _, f := range u["Service"]["SystemCallFilter"] {
		words := strings.Fields(strings.TrimPrefix(f, "~"))
		if strings.HasPrefix(f, "~") {
			deny = deny || (slices.Contains(words, "@privileged") && slices.Contains(words, "@resources"))
		} else {
			allow = allow || slices.Contains(words, "@system-service")
		}
	}
	if !allow || !deny {
		fail("SystemCallFilter=%q: want @system-service minus @privileged and @resources", u["Service"]["SystemCallFilter"])
	}
	// The root key is mlock'ed: at least a page.
	if v, ok := u.last("Service", "LimitMEMLOCK"); !ok {
		fail("LimitMEMLOCK is not set")
	} else if n, err := systemdBytes(v); err != nil || n < 4096 {
		fail("LimitMEMLOCK=%s, want at least 4096 bytes (%v)", v, err)
	}
	// Stop must outlast the drain and the graceful shutdown, or systemd's
	// SIGKILL cuts in-flight requests.
	d := config.Defaults().Listen
	if v, ok := u.last("Service", "TimeoutStopSec"); !ok {
		fail("TimeoutStopSec is not set")
	} else if s, err := systemdSeconds(v); err != nil || s <= d.DrainDelay+d.ShutdownTimeout {
		fail("TimeoutStopSec=%s, want more than drain_delay+shutdown_timeout = %s (%v)", v, d.DrainDelay+d.ShutdownTimeout, err)
	}
	if v, _ := u.last("Service", "ExecReload"); !strings.Contains(v, "-HUP") || !strings.Contains(v, "$MAINPID") {
		fail("ExecReload=%q, want kill -HUP $MAINPID (TLS reload)", v)
	}
	if v, _ := u.last("Service", "ExecStart"); !strings.HasPrefix(v, "/") || !slices.Contains(strings.Fields(v), "serve") {
		fail("ExecStart=%q, want an absolute path running `serve`", v)
	}
	return errs
}

func sameWords(a, b string) bool {
	x, y := strings.Fields(a), strings.Fields(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

func readUnit(t *testing.T, path string, uncomment bool) (unit, string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u, err := parseUnit(string(b), uncomment)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return u, string(b)
}

func TestImageServiceUnitSettings(t *testing.T) {
	u, text := readUnit(t, "keywarden.service", false)
	for _, err := range checkServiceUnit(u) {
		t.Error(err)
	}

	// The negative case for every kind of check: a weakened unit fails.
	mutations := []struct {
		name, old, new string
	}{
		{"new privileges", "NoNewPrivileges=yes", "NoNewPrivileges=no"},
		{"root user", "User=keywarden", "User=root"},
		{"capability", "CapabilityBoundingSet=\n", "CapabilityBoundingSet=CAP_NET_ADMIN\n"},
		{"ambient capability", "AmbientCapabilities=\n", "AmbientCapabilities=CAP_SYS_ADMIN\n"},
		{"another device", "DeviceAllow=/dev/tpmrm0 rw", "DeviceAllow=/dev/tpmrm0 rw\nDeviceAllow=/dev/sda rw"},
		{"open device policy", "DevicePolicy=closed", "DevicePolicy=auto"},
		{"writable system", "ProtectSystem=strict", "ProtectSystem=full"},
		{"no syscall deny list", "SystemCallFilter=~", "#SystemCallFilter=~"},
		{"netlink", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK"},
		{"W^X", "MemoryDenyWriteExecute=yes", "MemoryDenyWriteExecute=no"},
		{"short stop", "TimeoutStopSec=40s", "TimeoutStopSec=10s"},
		{"no memlock", "LimitMEMLOCK=8M", "LimitMEMLOCK=0"},
		{"no reload", "ExecReload=", "#ExecReload="},
	}
	for _, m := range mutations {
		t.Run(m.name, func(t *testing.T) {
			if !strings.Contains(text, m.old) {
				t.Fatalf("the unit has no %q to weaken", m.old)
			}
			w, err := parseUnit(strings.Replace(text, m.old, m.new, 1), false)
			if err != nil {
				t.Fatal(err)
			}
			if errs := checkServiceUnit(w); len(errs) == 0 {
				t.Errorf("weakened unit (%s → %s) passed the checks", m.old, m.new)
			}
		})
	}
}

func TestSystemdTimeParsing(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{{"40s", 40 * time.Second}, {"90", 90 * time.Second}, {"1min 30s", 90 * time.Second}, {"2min", 2 * time.Minute}}
	for _, tt := range tests {
		if got, err := systemdSeconds(tt.in); err != nil || got != tt.want {
			t.Errorf("systemdSeconds(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	if _, err := systemdSeconds("soon"); err == nil {
		t.Error("systemdSeconds accepted \"soon\"")
	}
	if n, err := systemdBytes("8M"); err != nil || n != 8<<20 {
		t.Errorf("systemdBytes(8M) = %d, %v", n, err)
	}
}

// TestImageCredentialsDropIn: every secret goes through LoadCredential= and a
// real setting's …_FILE form (or a setting that takes a path), never
// through a plain environment value.
func TestImageCredentialsDropIn(t *testing.T) {
	u, _ := readUnit(t, "credentials.conf", true)
	known := map[string]bool{}
	for _, names := range config.EnvNames() {
		for _, n := range names {
			known[n] = true
		}
	}
	creds := map[string]string{}
	for _, lc := range u["Service"]["LoadCredential"] {
		id, path, ok := strings.Cut(lc, ":")
		if !ok || !strings.HasPrefix(path, "/etc/keywarden/credentials/") {
			t.Errorf("LoadCredential=%s: want ID:/etc/keywarden/credentials/FILE", lc)
		}
		creds[id] = path
	}
	envs := u["Service"]["Environment"]
	if len(envs) == 0 {
		t.Fatal("no Environment= lines")
	}
	for _, e := range envs {
		name, val, _ := strings.Cut(e, "=")
		// Either a secret's …_FILE form, or a setting that is itself a
		// path (KEYWARDEN_VAULT_KEY_FILE for vault.key_file).
		base, ok := strings.CutSuffix(name, "_FILE")
		if !ok || (!known[base] && !known[name]) {
			t.Errorf("Environment=%s: %s is neither the _FILE form of a Keywarden setting nor a path setting", e, name)
		}
		id, ok := strings.CutPrefix(val, "%d/")
		if !ok {
			t.Errorf("Environment=%s: the value must be %%d/<credential id>", e)
			continue
		}
		if _, ok := creds[id]; !ok {
			t.Errorf("Environment=%s: no LoadCredential=%s:…", e, id)
		}
	}
	if len(creds) != len(envs) {
		t.Errorf("%d credentials but %d variables: each credential needs its variable", len(creds), len(envs))
	}
}

// TestImageBackupUnitMatchesService: the backup job runs the same binary, as
// the same user, against the default admin listener.
func TestImageBackupUnitMatchesService(t *testing.T) {
	svc, _ := readUnit(t, "keywarden.service", false)
	bak, _ := readUnit(t, "keywarden-backup.service", false)
	start, _ := svc.last("Service", "ExecStart")
	bin := strings.Fields(start)[0]
	bstart, _ := bak.last("Service", "ExecStart")
	if !strings.Contains(bstart, bin+" backup -out /var/backups/keywarden/") && !strings.Contains(bstart, bin+" backup -out \"/var/backups/keywarden/") {
		t.Errorf("backup ExecStart=%s does not run %s backup into /var/backups/keywarden", bstart, bin)
	}
	for _, k := range []string{"User", "Group"} {
		a, _ := svc.last("Service", k)
		b, _ := bak.last("Service", k)
		if a != b {
			t.Errorf("%s: service %q, backup %q", k, a, b)
		}
	}
	wantURL := "KEYWARDEN_ADMIN_URL=http://" + config.Defaults().Listen.AdminAddr
	if !slices.Contains(bak["Service"]["Environment"], wantURL) {
		t.Errorf("backup Environment=%q, want %s", bak["Service"]["Environment"], wantURL)
	}
	if rw := svc["Service"]["ReadWritePaths"]; !slices.Contains(rw, "/var/backups/keywarden") {
		t.Errorf("service ReadWritePaths=%q", rw)
	}
	tm, _ := readUnit(t, "keywarden-backup.timer", false)
	if v, ok := tm.last("Timer", "OnCalendar"); !ok || v == "" {
		t.Error("keywarden-backup.timer has no OnCalendar=")
	}
}

// TestImageSysusersAndTmpfiles creates the user and the folders in a scratch
// root with Debian's systemd-sysusers and systemd-tmpfiles.
func TestImageSysusersAndTmpfiles(t *testing.T) {
	sysusers := needTool(t, "systemd-sysusers")
	tmpfiles := needTool(t, "systemd-tmpfiles")
	if os.Geteuid() != 0 {
		t.Skip("systemd-tmpfiles needs root to set owners")
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	if out, err := exec.Command(sysusers, "--root="+root, abs("sysusers.conf")).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	group, _ := os.ReadFile(filepath.Join(root, "etc/group"))
	var uid, gid int = -1, -1
	for _, l := range strings.Split(string(passwd), "\n") {
		f := strings.Split(l, ":")
		if len(f) == 7 && f[0] == "keywarden" {
			uid, _ = strconv.Atoi(f[2])
			gid, _ = strconv.Atoi(f[3])
			if f[5] != "/var/lib/keywarden" || f[6] != "/usr/sbin/nologin" {
				t.Errorf("keywarden user: home %q shell %q", f[5], f[6])
			}
		}
	}
	if uid <= 0 || uid >= 1000 {
		t.Fatalf("keywarden is not a system user (uid %d):\n%s", uid, passwd)
	}
	tssMember := false
	for _, l := range strings.Split(string(group), "\n") {
		f := strings.Split(l, ":")
		if len(f) == 4 && f[0] == "tss" {
			tssMember = slices.Contains(strings.Split(f[3], ","), "keywarden")
		}
	}
	if !tssMember {
		t.Errorf("keywarden is not in group tss (for /dev/tpmrm0):\n%s", group)
	}

	if out, err := exec.Command(tmpfiles, "--root="+root, "--create", abs("tmpfiles.conf")).CombinedOutput(); err != nil {
		t.Fatalf("systemd-tmpfiles: %v\n%s", err, out)
	}
	tests := []struct {
		path     string
		mode     os.FileMode
		uid, gid int
	}{
		{"/etc/keywarden", 0o750, 0, gid},
		{"/etc/keywarden/tls", 0o750, 0, gid},
		{"/etc/keywarden/credentials", 0o700, 0, 0},
		{"/var/lib/keywarden", 0o700, uid, gid},
		{"/var/backups/keywarden", 0o700, uid, gid},
	}
	for _, tt := range tests {
		fi, err := os.Stat(filepath.Join(root, tt.path))
		if err != nil {
			t.Errorf("%s: %v", tt.path, err)
			continue
		}
		st := statOwner(fi)
		if !fi.IsDir() || fi.Mode().Perm() != tt.mode || st[0] != tt.uid || st[1] != tt.gid {
			t.Errorf("%s: dir=%v mode %o owner %d:%d, want mode %o owner %d:%d", tt.path, fi.IsDir(), fi.Mode().Perm(), st[0], st[1], tt.mode, tt.uid, tt.gid)
		}
	}
}

func statOwner(fi os.FileInfo) [2]int {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return [2]int{-1, -1}
	}
	return [2]int{int(st.Uid), int(st.Gid)}
}

var (
	yamlSection = regexp.MustCompile(`^(?:#\s*)?([a-z_]+):\s*(?:#.*)?$`)
	yamlKey     = regexp.MustCompile(`^\s+(?:#\s*)?([a-z_]+):`)
)

// TestImageExampleConfig loads image/keywarden.yaml with the real loader and
// checks that it names every setting (commented or not), so the example
// stays the complete reference when settings are added.
func TestImageExampleConfig(t *testing.T) {
	c, err := config.Load(config.Defaults(), "keywarden.yaml", nil)
	if err != nil {
		t.Fatalf("the example configuration does not load: %v", err)
	}
	if c.Dev || c.Listen.PlainHTTP || c.TPM.Path != "/dev/tpmrm0" {
		t.Errorf("the example is not a production configuration: dev=%v plain_http=%v tpm=%s", c.Dev, c.Listen.PlainHTTP, c.TPM.Path)
	}
	b, _ := os.ReadFile("keywarden.yaml")
	seen := map[string]bool{}
	section := ""
	for _, line := range strings.Split(string(b), "\n") {
		if m := yamlSection.FindStringSubmatch(line); m != nil {
			section = m[1]
			continue
		}
		if m := yamlKey.FindStringSubmatch(line); m != nil && section != "" {
			seen[section+"."+m[1]] = true
		}
	}
	for path := range config.EnvNames() {
		if !seen[path] {
			t.Errorf("image/keywarden.yaml does not mention %s: document it there", path)
		}
	}
	// Negative case: the scan does not see settings that are not there.
	if seen["listen.no_such_setting"] || len(seen) < len(config.EnvNames()) {
		t.Errorf("scan found %d settings for %d known", len(seen), len(config.EnvNames()))
	}
}

// TestReproducibleBuild runs image/reproducible.sh (`make reproducible`):
// two release builds of HEAD from clean clones at different paths, the
// second with an empty build cache, must be identical. Then it checks the
// release binary itself: static, trimmed, without the TPM simulator,
// refusing `dev`, and reporting the commit it was built from.
func TestReproducibleBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the release binary twice (minutes); skipped with -short")
	}
	for _, tool := range []string{"git", "make", "sha256sum", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found", tool)
		}
	}
	if err := exec.Command("git", "rev-parse", "--git-dir").Run(); err != nil {
		t.Skip("not a git checkout: the reproducible build clones HEAD")
	}
	work := t.TempDir()
	cmd := exec.Command("bash", "reproducible.sh", work)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("reproducible.sh (%s):\n%s%s", time.Since(start).Round(time.Second), stdout.String(), stderr.String())
	fields := map[string]string{}
	for _, l := range strings.Split(stdout.String(), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 3 && f[0] == "sha256":
			fields[f[1]] = f[2]
		case len(f) == 2 && f[0] == "revision":
			fields["revision"] = f[1]
		}
	}
	if err != nil {
		t.Fatalf("reproducible build failed: %v", err)
	}
	hexRE := regexp.MustCompile(`^[0-9a-f]{64}$`)
	if !hexRE.MatchString(fields["a"]) || fields["a"] != fields["b"] {
		t.Fatalf("digests differ or are missing: a=%q b=%q", fields["a"], fields["b"])
	}

	bin := filepath.Join(work, "a", "keywarden")
	info, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath=true", "vcs.revision=" + fields["revision"], "vcs.modified=false"} {
		if !bytes.Contains(info, []byte(want)) {
			t.Errorf("release binary build info lacks %s:\n%s", want, info)
		}
	}
	syms, err := exec.Command("go", "tool", "nm", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(syms, []byte("go-tpm-tools/simulator")) {
		t.Error("the release binary contains the TPM simulator")
	}
	raw, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(work)) {
		t.Errorf("the release binary contains the build path %s (-trimpath not applied)", work)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.Contains(string(out), fields["revision"]) {
		t.Errorf("`keywarden version` = %q (%v), want the revision %s", out, err, fields["revision"])
	}
	out, err = exec.Command(bin, "dev").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "release builds refuse it") {
		t.Errorf("the release binary did not refuse `dev`: %v\n%s", err, out)
	}
}
