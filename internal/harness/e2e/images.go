package e2e

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/weftnet/weft/internal/harness/gobuild"
)

// The images the lab's nodes import; there is no registry, so every pod
// spec names one of these with a pull policy that never pulls.
const (
	// PauseImage is every sandbox's image, pinned in containerd's config.
	PauseImage = "weft.test/pause:e2e"
	// WeftImage is the weft binary at /usr/local/bin/weft, as the Dockerfile
	// builds it.
	WeftImage = "weft.test/weft:e2e"
	// WeftImageNext is the same weft under another tag, for the rolling update.
	WeftImageNext = "weft.test/weft:e2e-next"
	// AppImage is testapp as a pod's app: `testapp serve` by default.
	AppImage = "weft.test/testapp:e2e"
)

// file is one regular file of an image layer.
type file struct {
	path string
	mode int64
	data []byte
}

// layer makes an image layer of files (with their parent directories).
func layer(files []file) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	mtime := time.Unix(0, 0)
	for _, f := range files {
		var parents []string
		for d := filepath.Dir(f.path); d != "." && d != "/" && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: mtime}); err != nil {
				return nil, err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.path, Mode: f.mode, Size: int64(len(f.data)), ModTime: mtime}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
}

// image is a one-layer linux/amd64 image of files running entrypoint.
func image(files []file, entrypoint, cmd []string) (v1.Image, error) {
	l, err := layer(files)
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Entrypoint = entrypoint
	cf.Config.Cmd = cmd
	cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	return mutate.ConfigFile(img, cf)
}

// BuildImages builds weft and testapp statically into dir and writes the
// four images as one docker-archive, which `ctr images import` reads. It
// returns the archive's path and the static weft binary's.
func BuildImages(dir string) (archive, weftBin string, err error) {
	weftBin = filepath.Join(dir, "weft")
	appBin := filepath.Join(dir, "testapp")
	if err := gobuild.Static(gobuild.WeftPkg, weftBin); err != nil {
		return "", "", err
	}
	if err := gobuild.Static("github.com/weftnet/weft/internal/harness/e2e/testapp", appBin); err != nil {
		return "", "", err
	}
	weft, err := os.ReadFile(weftBin)
	if err != nil {
		return "", "", err
	}
	app, err := os.ReadFile(appBin)
	if err != nil {
		return "", "", err
	}
	// distroless/static has these; the sidecar and injector run as 65532.
	passwd := file{"etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")}
	weftImg, err := image([]file{passwd, {"usr/local/bin/weft", 0o755, weft}}, []string{"/usr/local/bin/weft"}, nil)
	if err != nil {
		return "", "", fmt.Errorf("weft image: %w", err)
	}
	appFiles := []file{passwd, {"usr/local/bin/testapp", 0o755, app}}
	pauseImg, err := image(appFiles, []string{"/usr/local/bin/testapp"}, []string{"pause"})
	if err != nil {
		return "", "", fmt.Errorf("pause image: %w", err)
	}
	appImg, err := image(appFiles, []string{"/usr/local/bin/testapp"}, []string{"serve"})
	if err != nil {
		return "", "", fmt.Errorf("app image: %w", err)
	}
	images := map[name.Tag]v1.Image{}
	for ref, img := range map[string]v1.Image{PauseImage: pauseImg, WeftImage: weftImg, WeftImageNext: weftImg, AppImage: appImg} {
		tag, err := name.NewTag(ref)
		if err != nil {
			return "", "", err
		}
		images[tag] = img
	}
	archive = filepath.Join(dir, "images.tar")
	if err := tarball.MultiWriteToFile(archive, images); err != nil {
		return "", "", fmt.Errorf("write %s: %w", archive, err)
	}
	return archive, weftBin, nil
}
