"""The package version, in a module of its own: the CLI, the manifest and the build read it without importing the
package face (which would pull the library's entry points)."""

__version__ = "0.1.0"
