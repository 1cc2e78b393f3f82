"""Shared by every test folder: this file puts tests/ on sys.path, so ``tiny_models`` imports everywhere."""
