package testenv

import (
	"bufio"
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Chromium is the path of a headless-capable chromium (Debian's package "chromium"); Missing when there is none.
func Chromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	Missing(t, "no chromium on PATH (apt-get install chromium): needed to load the HTML report in a real browser")
	return ""
}

// Page is an HTML file as headless chromium showed it.
type Page struct {
	DOM        string      // the document after loading, as --dump-dom prints it
	Screenshot image.Image // the first screen (Width × Height pixels)
	Console    []string    // every message the page wrote to the console, uncaught errors included
	Broken     []string    // images that did not load or decode (their alt text, else their source)
	External   []string    // resources the page fetched (a self-contained page fetches none)
}

// probe is added to the tested copy of a page: after loading it lists broken images and fetched resources in
// attributes of <html> (read back from the DOM) and reports broken images on the console too.
const probe = `<script>
window.addEventListener("load", function () {
  var broken = [];
  for (var i = 0; i < document.images.length; i++) {
    var im = document.images[i];
    if (!(im.complete && im.naturalWidth > 0)) broken.push(im.alt || im.src.slice(0, 60));
  }
  var external = performance.getEntriesByType("resource").map(function (e) { return e.name; })
    .filter(function (n) { return n.indexOf("data:") !== 0; });
  var root = document.documentElement;
  root.setAttribute("data-probe-broken", broken.join("|"));
  root.setAttribute("data-probe-external", external.join("|"));
  root.setAttribute("data-probe-done", "yes");
  if (broken.length) console.error("broken images: " + broken.join(", "));
});
</script>`

// LoadInBrowser opens a copy of the HTML file at path, alone in a new folder (so that a reference to any file
// beside it breaks) and with the probe added, in headless chromium without network, then takes a screenshot of
// width × height pixels (none if width is 0). Page fields hold what it found; failing to run chromium fails the test.
func LoadInBrowser(t testing.TB, path string, width, height int) Page {
	t.Helper()
	bin := Chromium(t)
	html, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	page := filepath.Join(dir, "page.html")
	text := string(html)
	if i := strings.LastIndex(text, "</body>"); i >= 0 {
		text = text[:i] + probe + text[i:]
	} else {
		text += probe
	}
	if err := os.WriteFile(page, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (stdout, stderr string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		base := []string{"--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--user-data-dir=" + filepath.Join(dir, "profile"),
			"--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"}
		cmd := exec.CommandContext(ctx, bin, append(append(base, args...), "file://"+page)...)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s %v: %v\n%s", bin, args, err, errb.String())
		}
		return out.String(), errb.String()
	}
	var p Page
	dom, logs := run("--dump-dom")
	p.DOM = dom
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		if strings.Contains(sc.Text(), ":CONSOLE") {
			p.Console = append(p.Console, sc.Text())
		}
	}
	if !strings.Contains(dom, `data-probe-done="yes"`) {
		t.Fatalf("chromium printed the DOM of %s before the page finished loading:\n%.500s", path, dom)
	}
	p.Broken = probeList(dom, "data-probe-broken")
	p.External = probeList(dom, "data-probe-external")

	if width <= 0 {
		return p
	}
	shot := filepath.Join(dir, "screenshot.png")
	run("--screenshot="+shot, "--hide-scrollbars", "--window-size="+strconv.Itoa(width)+","+strconv.Itoa(height))
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("chromium wrote no screenshot: %v", err)
	}
	defer f.Close()
	if p.Screenshot, err = png.Decode(f); err != nil {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
	return p
}

// probeList reads one of the probe's attributes ("a|b|c") from the dumped DOM.
func probeList(dom, attr string) []string {
	_, rest, ok := strings.Cut(dom, attr+`="`)
	if !ok {
		return nil
	}
	v, _, _ := strings.Cut(rest, `"`)
	if v == "" {
		return nil
	}
	return strings.Split(v, "|")
}
