"""SMS tests (a package, so test modules can share constants through conftest)."""
