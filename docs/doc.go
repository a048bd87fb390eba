// Package docs holds weft's documentation; its test checks that every relative link in README.md and docs/*.md resolves.
package docs
