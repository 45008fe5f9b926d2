"""The Text tab's parts: worker generators and branch data (work), token colours (colours),
the token view (token_view), and the Compare and Score pages."""
